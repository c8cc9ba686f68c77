"""Apps: the Parsl side of dgaas-flow, for your own apps as for the campaign's: `executor` (a Parsl
executor whose blocks start pilots), `client` (the node's server from inside any app) and `tasks`
(the campaign's own app). The public names are exported by `dgaas_flow` itself."""
