# Stand-in for Slicer's extension packaging: the real one configures CPack; here we only record it was included.
message(STATUS "fake Slicer: extension CPack included")
