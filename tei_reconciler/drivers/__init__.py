"""The reconciler's hands on the host: processes, health probes, ports and GPUs."""
