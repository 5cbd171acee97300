"""zhida's Temporal workflows; `workflows.all.ALL_WORKFLOWS` lists them."""
