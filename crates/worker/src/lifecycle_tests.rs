// Virtual-time tests of the connection state machine: written next.
