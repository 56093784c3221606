"""The benchmark's definitions: the task specifications (from tasks/*.yaml) and the prompts rendered
from them. Imports only the ground modules (errors, records, resources)."""
