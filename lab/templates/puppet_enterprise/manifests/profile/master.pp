# Lab stand-in for PE's master profile. A real agent run applying it starts the host's
# compile service on 8140 (a real Puppet Server, or the light stand-in); the run's report
# tells PuppetDB this node is a master, which is what the PuppetDB and console runs read.
class puppet_enterprise::profile::master (
  Boolean $enable_ca_proxy = false,
) {
  exec { 'pelab master run latency':
    command   => '@INHOST@/bin/pelab-delay master_run',
    onlyif    => '@INHOST@/bin/pelab-delay --positive master_run',
    logoutput => true,
    timeout   => 3600,
  }
  -> exec { 'pe compile service on 8140':
    command => '@INHOST@/bin/pelab-compile-service start',
    unless  => '@INHOST@/bin/pelab-compile-service status',
  }
}
