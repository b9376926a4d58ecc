"""Past one machine: independent jobs (study cells, conversion shards, evaluation episode ranges) on this
machine or as Slurm job arrays through submitit (`launcher`), and multi-node training scripts (`slurm`).
docs/cluster.md walks through a whole reproduction on a cluster."""
