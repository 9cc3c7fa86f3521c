"""The --mode entry points: train (`run`), export, predict and evaluate
(any artifact loaded as a predictor); and the scratch baseline a run
compares against."""
