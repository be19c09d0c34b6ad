"""The `recsys` commands: thin typer wrappers that parse options and call the deployables."""
