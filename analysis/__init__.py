"""Analysis of ablation sweeps: load the result store into pandas, average over seeds, compare, plot and report."""
