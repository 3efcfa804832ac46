"""Support shared by the tests and the benchmarks: free loopback ports, a stack in a temp
home, one way of waiting, process ages, the Slack stand-in, and the benchmarks' trials,
figures, tables and profiles; and mutation testing (scripts/run_mutation.sh: mutation,
mutation_plugin).

Nothing here imports tests/ or benchmarks/; both import from here. It may use unistack.
"""
