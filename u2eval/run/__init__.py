"""Running an evaluation: the runner, the dispatcher, the response store, the run folder and its owner,
merging shards. Imports models/, grounded/, scoring/, data/, benchmark/ and the ground."""
