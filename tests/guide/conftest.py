"""The real SLURM cluster and HTCondor pool fixtures, shared with tests/integration (they live in its
test modules; importing them here makes them available to tests/guide)."""

from tests.integration.test_htcondor import htcondor_pool  # noqa: F401
from tests.integration.test_slurm import slurm_cluster  # noqa: F401
