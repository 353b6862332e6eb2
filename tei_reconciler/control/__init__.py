"""The control loop: the controller, the source of desired state it reads, the actuator that
carries out its actions, per-instance runtime records and how they are published, and the
state file watcher."""
