# Lab stand-in for PE's master profile. A real agent run applying it starts the host's
# compile service on 8140 (a real Puppet Server, or the light stand-in); the run's report
# tells PuppetDB this node is a master, which is what the PuppetDB and console runs read.
class puppet_enterprise::profile::master (
  Boolean $enable_ca_proxy = false,
) {
  # The latency of PE's master profile being applied (packages, services, config: minutes in
  # PE). Only until the compile service runs: a later run of a configured master changes
  # nothing and takes seconds, as in PE (from 2019.7 the first agent run of a compiler
  # already applies the profile, since PE Compiler matches its pp_auth_role).
  exec { 'pelab master run latency':
    command   => '@INHOST@/bin/pelab-delay master_run',
    onlyif    => '@INHOST@/bin/pelab-delay --positive master_run',
    unless    => '@INHOST@/bin/pelab-compile-service status',
    logoutput => true,
    timeout   => 3600,
  }
  -> exec { 'pe compile service on 8140':
    command => '@INHOST@/bin/pelab-compile-service start',
    timeout => 600,  # the start waits for the server, up to its START_TIMEOUT (300 s)
    unless  => '@INHOST@/bin/pelab-compile-service status',
  }
  # PE 2017.2+: "the updated CRL is managed by Puppet and distributed to compile masters"
  # (PE's node removal page [S38]): the CA's CRL into hostcrl, and the server reloaded to
  # serve it. Before 2017.2 a server takes the CRL only when restarted or reloaded, so
  # both commands do nothing there (pelab-compile-service).
  -> exec { 'pe crl from the CA':
    command   => '@INHOST@/bin/pelab-compile-service crl-sync',
    unless    => '@INHOST@/bin/pelab-compile-service crl-current',
    logoutput => true,
  }
  # On the primary from PE 2015.3: its file sync storage serves the masters PuppetDB knows
  # (file-sync.client-certnames), rebuilt by this run - why PE's add procedure ends with a
  # run on the primary (pelab-whitelist; docs/resources/infra-refresh.md).
  if $trusted['certname'] == '@PRIMARY@' {
    exec { 'file sync client-certnames':
      command   => '@INHOST@/bin/pelab-whitelist write file-sync',
      unless    => '@INHOST@/bin/pelab-whitelist check file-sync',
      logoutput => true,
    }
  }
  # PE 3.x: with enable_ca_proxy a compile master forwards CA requests to the primary;
  # without it they fail there (the lab's compile service reads this marker per request).
  file { '/etc/puppetlabs/pelab-ca-proxy':
    ensure  => $enable_ca_proxy ? { true => file, default => absent },
    content => "enable_ca_proxy = true (puppet_enterprise::profile::master)\n",
  }
}
