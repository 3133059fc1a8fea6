# Stand-in for Slicer's extension config generation: checks the metadata the Extensions Index needs.
foreach(_var EXTENSION_HOMEPAGE EXTENSION_CATEGORY EXTENSION_CONTRIBUTORS EXTENSION_DESCRIPTION
             EXTENSION_ICONURL EXTENSION_SCREENSHOTURLS EXTENSION_DEPENDS)
  if("${${_var}}" STREQUAL "")
    message(FATAL_ERROR "extension metadata ${_var} is not set")
  endif()
endforeach()
get_property(_modules GLOBAL PROPERTY MEDFM_FAKE_SLICER_MODULES)
if(NOT _modules)
  message(FATAL_ERROR "no module was added with slicerMacroBuildScriptedModule")
endif()
message(STATUS "fake Slicer: extension ${PROJECT_NAME} (${EXTENSION_CATEGORY}) modules: ${_modules}")
