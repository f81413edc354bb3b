"""Wire formats of jiapei, sans-IO: NMEA, the agent↔server record and message contract, JT/T 808 frames.

Nothing in this package opens a socket, a file or a serial port, starts a thread or reads the clock: callers pass
bytes and times in, and get typed values and bytes out. See ``CONTRACT.md`` for the record contract.
"""
