# Lab stand-in for PE's top-level class: the PE Infrastructure group declares it with
# the infrastructure host names, as PE does.
class puppet_enterprise (
  String $puppet_master_host,
  String $console_host,
  String $puppetdb_host,
) {
}
