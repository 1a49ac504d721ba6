# The Debian package: `cpack -G DEB` in a build directory (docs/operations.md). It holds what
# `cmake --install --prefix /usr` installs — binaries in /usr/bin, units in /lib/systemd/system,
# sysusers/tmpfiles entries, /etc/strata/strata.yaml (a conffile), docs in
# /usr/share/doc/strata — plus maintainer scripts from systemd/debian/. Depends come from
# dpkg-shlibdeps (package dpkg-dev, in scripts/deps) and adduser for the postinst fallback.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME strata)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "streaming ingestion for vector embeddings: Kafka -> windowed store -> HNSW/IVF-PQ search")
set(CPACK_PACKAGE_DESCRIPTION
    "strata-ingest consumes embeddings from Kafka into a time-windowed LSM store and announces
sealed windows on NATS JetStream; strata-indexer builds HNSW or IVF-PQ indexes for them and
serves search over HTTP. Both run under systemd (strata-ingest.service,
strata-indexer.service, and templates for several instances per host). strata is the
operator's CLI.")
set(CPACK_PACKAGE_CONTACT "strata maintainers <strata@localhost>")
set(CPACK_STRIP_FILES ON)
# Install with DESTDIR and the real prefix, so install-time paths (systemd/install.cmake)
# are the ones on the target system.
set(CPACK_SET_DESTDIR ON)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION misc)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "systemd")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/systemd/debian/conffiles ${CMAKE_SOURCE_DIR}/systemd/debian/postinst
    ${CMAKE_SOURCE_DIR}/systemd/debian/prerm ${CMAKE_SOURCE_DIR}/systemd/debian/postrm)
include(CPack)
