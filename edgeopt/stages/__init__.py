"""The pipeline's stages: each is a package or module with its settings model and one entry point,
``run(artifact, context) -> StageResult``; stages never import each other (``base`` is what they share)."""
