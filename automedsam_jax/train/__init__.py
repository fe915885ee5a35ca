"""Training of AutoMedSAM (SPEC §3, §6): the sharded step, checkpoints, the loop, logging.

    python train.py --help
"""
