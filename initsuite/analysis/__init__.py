"""Tables in, figures and words out: theory, verdicts, summaries, plots, the paper, the report. Never imports TensorFlow."""
