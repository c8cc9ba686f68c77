from dgaas_flow.optimized import cli

cli()
