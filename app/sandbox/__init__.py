"""`pollhook sandbox`: fake MiniMax and Jimmy AI APIs served over real HTTP.

The quick start, the end-to-end tests and the benchmarks point pollhook's provider base URLs
at it. It imitates the providers as their docs describe them (paths, envelopes, error codes,
mixed status casing, rate-limit answers), runs scripted tasks, injects faults and counts every
request, so a test can check what pollhook sent without trusting pollhook's own numbers.

`state` holds the pure in-memory model (no I/O, clock passed in); `media` makes the result
files (MP3, SRT, MiniMax's tar) from a task's id and size; `app` is the HTTP face; `schemas`
are the control API's request and response bodies.
"""
