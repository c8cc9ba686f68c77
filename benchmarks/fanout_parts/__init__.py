"""The parts of benchmarks/fanout.py, one job a module: the models and their items (models), the
four measured paths (ceiling, campaign, naive, floor), one benchmark (measure, run), the server
settings search (tune) and what is written from the results (table, markdown, summary, plots)."""
