"""The target classifier (Flax BERT / MiniLM) and its fine-tuning; see `model.py` and `finetune.py`."""
