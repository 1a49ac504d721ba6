# Runs at install time (cmake --install, cpack): CMAKE_INSTALL_PREFIX is the prefix of this
# install, not of the configure, so `cmake --install build --prefix /opt/x` and the .deb
# (prefix /usr) both get units whose paths name their own binaries and config.
#
# Set by systemd/CMakeLists.txt before this script: STRATA_SYSTEMD_SRC (this directory),
# STRATA_SYSTEMD_WORK (a scratch directory in the build tree), STRATA_BINDIR, STRATA_DOCDIR,
# STRATA_SYSCONFDIR (GNUInstallDirs' relative or absolute values), pkg-config systemd's
# STRATA_PC_UNITDIR, STRATA_PC_SYSUSERSDIR, STRATA_PC_TMPFILESDIR (empty when there is no
# systemd.pc) and the cache overrides STRATA_SYSTEMD_UNITDIR, STRATA_SYSUSERSDIR,
# STRATA_TMPFILESDIR (empty: derived).
#
# Prefix /usr (a distribution install, the .deb): units in /lib/systemd/system (Debian 12's
# systemdsystemunitdir), /usr/lib/sysusers.d, /usr/lib/tmpfiles.d, config in /etc/strata.
# Any other prefix P: P/lib/systemd/system, P/lib/sysusers.d, P/lib/tmpfiles.d (systemd reads
# /usr/local/lib/... too; for another P link or copy the units), config in P/etc/strata.

function(strata_full out rel)
  if(IS_ABSOLUTE "${rel}")
    set(${out} "${rel}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${rel}" PARENT_SCOPE)
  endif()
endfunction()

set(prefix "${CMAKE_INSTALL_PREFIX}")
string(REGEX REPLACE "/+$" "" prefix "${prefix}")
strata_full(bindir "${STRATA_BINDIR}")
strata_full(docdir "${STRATA_DOCDIR}")
if(prefix STREQUAL "/usr" OR prefix STREQUAL "")
  # pkg-config systemd's answer when there was one at configure time, else Debian 12's.
  set(unitdir "/lib/systemd/system")
  set(sysusersdir "/usr/lib/sysusers.d")
  set(tmpfilesdir "/usr/lib/tmpfiles.d")
  foreach(v UNITDIR SYSUSERSDIR TMPFILESDIR)
    if(NOT "${STRATA_PC_${v}}" STREQUAL "")
      string(TOLOWER "${v}" lv)
      set(${lv} "${STRATA_PC_${v}}")
    endif()
  endforeach()
  if(IS_ABSOLUTE "${STRATA_SYSCONFDIR}")
    set(confdir "${STRATA_SYSCONFDIR}")
  else()
    set(confdir "/${STRATA_SYSCONFDIR}") # GNUInstallDirs: prefix /usr -> /etc
  endif()
else()
  set(unitdir "${prefix}/lib/systemd/system")
  set(sysusersdir "${prefix}/lib/sysusers.d")
  set(tmpfilesdir "${prefix}/lib/tmpfiles.d")
  strata_full(confdir "${STRATA_SYSCONFDIR}")
endif()
foreach(v SYSTEMD_UNITDIR SYSUSERSDIR TMPFILESDIR)
  if(NOT "${STRATA_${v}}" STREQUAL "")
    string(TOLOWER "${v}" lv)
    string(REPLACE "systemd_" "" lv "${lv}")
    set(${lv} "${STRATA_${v}}")
  endif()
endforeach()

# The checked-in units name /usr/bin, /etc/strata and /usr/share/doc/strata; rewrite them.
# A scratch directory of this destination's own: installs to two destinations may run at once
# (ctest -j runs the install and package tests side by side).
string(MD5 dest "$ENV{DESTDIR}|${CMAKE_INSTALL_PREFIX}")
set(work "${STRATA_SYSTEMD_WORK}/${dest}")
file(REMOVE_RECURSE "${work}")
file(MAKE_DIRECTORY "${work}")
set(units strata-ingest.service strata-indexer.service strata-ingest@.service
          strata-indexer@.service)
set(staged)
foreach(u ${units})
  file(READ "${STRATA_SYSTEMD_SRC}/${u}" text)
  string(REPLACE "/usr/bin/" "${bindir}/" text "${text}")
  string(REPLACE "/etc/strata/" "${confdir}/strata/" text "${text}")
  string(REPLACE "/usr/share/doc/strata/" "${docdir}/" text "${text}")
  file(WRITE "${work}/${u}" "${text}")
  list(APPEND staged "${work}/${u}")
endforeach()
file(INSTALL DESTINATION "${unitdir}" TYPE FILE FILES ${staged})
file(REMOVE_RECURSE "${work}")
file(INSTALL DESTINATION "${sysusersdir}" TYPE FILE RENAME strata.conf
     FILES "${STRATA_SYSTEMD_SRC}/strata.sysusers")
file(INSTALL DESTINATION "${tmpfilesdir}" TYPE FILE RENAME strata.conf
     FILES "${STRATA_SYSTEMD_SRC}/strata.tmpfiles")

# The example config: never overwrite one an operator has edited (a plain `cmake --install`
# over a running host); the .deb marks it a conffile, so dpkg asks instead. The example is
# also in the docs directory either way.
set(conf "$ENV{DESTDIR}${confdir}/strata/strata.yaml")
if(EXISTS "${conf}")
  file(READ "${conf}" have)
  file(READ "${STRATA_SYSTEMD_SRC}/strata.yaml" want)
  if(NOT have STREQUAL want)
    message(STATUS "Keeping: ${conf} (differs from the example; see ${docdir}/strata.yaml)")
  endif()
else()
  file(INSTALL DESTINATION "${confdir}/strata" TYPE FILE FILES "${STRATA_SYSTEMD_SRC}/strata.yaml")
endif()
