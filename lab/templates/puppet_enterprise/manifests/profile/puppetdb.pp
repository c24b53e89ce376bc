# Lab stand-in for PE's PuppetDB profile: its run rewrites PuppetDB's certificate
# whitelist from the masters PuppetDB knows (so it must run after a new master's run).
class puppet_enterprise::profile::puppetdb {
  exec { 'pelab puppetdb run latency':
    command   => '@INHOST@/bin/pelab-delay puppetdb_run',
    onlyif    => '@INHOST@/bin/pelab-delay --positive puppetdb_run',
    logoutput => true,
    timeout   => 3600,
  }
  -> exec { 'puppetdb certificate-whitelist':
    command   => '@INHOST@/bin/pelab-whitelist write puppetdb',
    unless    => '@INHOST@/bin/pelab-whitelist check puppetdb',
    logoutput => true,
  }
}
