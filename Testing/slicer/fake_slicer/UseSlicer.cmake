# Stand-in for Slicer's UseSlicer.cmake: nothing to set up; the real one adds include paths and compiler flags.
message(STATUS "fake Slicer: UseSlicer included")
