"""Specs: the Pydantic models of workflows (here) and provider profiles (dgaas_flow.sites), loaded
from YAML and checked before anything starts."""

from dgaas_flow.specs.loading import json_schema, load_provider, load_workflow, validate_file
from dgaas_flow.specs.workflow import (
    ClientSettings,
    InputSpec,
    ModelSpec,
    OutputSpec,
    ScaleStep,
    ScaleTest,
    ServerSpec,
    Workflow,
)

__all__ = ["ClientSettings", "InputSpec", "ModelSpec", "OutputSpec", "ScaleStep", "ScaleTest", "ServerSpec",
           "Workflow", "json_schema", "load_provider", "load_workflow", "validate_file"]
