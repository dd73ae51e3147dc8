"""Operations: systemd notify and the watchdog monitor, the heartbeat file and
`collector health`, Prometheus metrics, logging."""
