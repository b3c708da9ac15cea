# config/ is the machinery (reader, writer, loader, overrides, scalars, enum names): its headers and
# sources include only config/ and util/. Each config struct lives beside the type it configures
# (train/train_config.h, data/prepare_config.h, ...), so config/ never includes another area and
# the config <-> data and config <-> train header cycles cannot come back.
#   cmake -DSOURCE_DIR=<repo> -P tests/layout/check_config_includes.cmake
if(NOT SOURCE_DIR)
  message(FATAL_ERROR "pass -DSOURCE_DIR=<repository root>")
endif()
file(GLOB_RECURSE files "${SOURCE_DIR}/include/agenttune/config/*" "${SOURCE_DIR}/src/config/*")
if(NOT files)
  message(FATAL_ERROR "no files under include/agenttune/config or src/config")
endif()
set(bad "")
foreach(f IN LISTS files)
  file(STRINGS "${f}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[\"<]agenttune/")
  foreach(line IN LISTS lines)
    if(NOT line MATCHES "agenttune/(config|util)/")
      file(RELATIVE_PATH rel "${SOURCE_DIR}" "${f}")
      string(APPEND bad "\n  ${rel}: ${line}")
    endif()
  endforeach()
endforeach()
if(bad)
  message(FATAL_ERROR "config/ must include only config/ and util/ (put the struct beside its type):${bad}")
endif()
list(LENGTH files n)
message(STATUS "config/ layout: ${n} files include only config/ and util/")
