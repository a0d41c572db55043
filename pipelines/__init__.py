"""The KFP pipeline (the DAG), its placement on a cluster, and how it runs locally or remotely."""
