"""The adapter protocol and registry (names, presets, provider/model) and the image budget. The model
adapters themselves live in model_adapters/ and import only this folder, benchmark/ and the ground."""
