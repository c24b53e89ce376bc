# Lab stand-in for PE's database profile, which the PE Database node group declares from
# PE 2018.1: "puppet_enterprise::profile::database - manages the PE-PostgreSQL service"
# (docs-archive pe/2019.0/preconfigured_node_groups.md; the group is new in 2018.1,
# pe/2018.1/2018.1_markdown/pe_enhancements.md). On an extra-large install this is the run
# peadm's add_compilers plan makes on the PostgreSQL node after writing the compiler's
# pg_ident lines ("On <primary_postgresql_host>, run puppet agent", plans/add_compilers.pp).
class puppet_enterprise::profile::database {
  exec { 'pe-postgresql running (database profile)':
    command => '@INHOST@/bin/pelab-pe-postgresql start',
    unless  => '@INHOST@/bin/pelab-pe-postgresql status',
  }
}
