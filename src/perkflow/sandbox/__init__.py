"""Local, faithful stand-ins for Braze and Bloomreach: the demo, the tests and the benchmarks talk to
these over real HTTP on loopback instead of the real platforms."""
