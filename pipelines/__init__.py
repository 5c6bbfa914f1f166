"""Lightning pipelines and the ``vit3d`` command. The only package of the project that imports Lightning."""
