"""What server.py, worker.py and make_keys.py share, in one package so that none of its
modules can shadow a user's: handlers, scheduling, where handlers run (runners, the MDP
broker, local worker processes), MDP framing, and the wire and socket helpers.

client.py takes nothing from here: it stays one file that works alone with pyzmq.
"""
