"""What a run writes for people: report.html, plots, the model card and its sentences."""
