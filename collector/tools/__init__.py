"""The tools around recorded data: reading it back (`collector.read`, `collector cat`),
`collector verify`, `collector replay`, and `collector demo`."""
