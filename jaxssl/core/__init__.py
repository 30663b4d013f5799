"""The core: steps, the trainer loop, pretraining objectives and fine-tuning tasks.

Core modules import models, data and the owners of outside systems, never a program.
"""
