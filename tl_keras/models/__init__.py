"""Networks: keras.applications and KerasHub classifiers, EfficientNet-Lite, HF BERT folders, blocks, freezing, saving."""
