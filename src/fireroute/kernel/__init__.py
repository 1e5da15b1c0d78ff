"""The only layer that touches the host: processes, sysctls, observation, plan execution."""
