"""Desired state: the Structs the state file decodes into, their rules, and the TOML file itself."""
