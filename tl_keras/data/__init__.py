"""Datasets: names, TFDS, folders, CSV text, packaged real data, synthetic tasks; splits and the input pipeline."""
