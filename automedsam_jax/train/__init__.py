"""Training of AutoMedSAM (docs/method.md#recipes, docs/method.md#scale-and-resumption): the
sharded step, checkpoints, the loop, logging.

    python train.py --help
"""
