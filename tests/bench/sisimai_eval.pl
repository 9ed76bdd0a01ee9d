#!/usr/bin/perl
# Sisimai (the reference bounce parser) scored against a labelled manifest
# the way `sluice bounce eval` scores Sluice: per split (dev, held-out) of the
# families.jsonl beside the manifest, the share of labelled rows whose
# recipient Sisimai finds, and of those found whose reply code, status,
# reason and hard/soft agree. Rows with no_result are skipped.
# Usage: perl tests/bench/sisimai_eval.pl tests/data/bounces-bounced/manifest.jsonl
use strict;
use warnings;
use JSON::PP;
use File::Basename qw(dirname);
use Sisimai;

my $manifest = shift or die "usage: $0 MANIFEST\n";
my $dir = dirname($manifest);
my $json = JSON::PP->new;
my %split;
if (open(my $fh, '<', "$dir/families.jsonl")) {
    while (<$fh>) { next unless /\S/; my $f = $json->decode($_); $split{$f->{family}} = $f->{split}; }
}
my (%n, %cache);
open(my $mh, '<', $manifest) or die "cannot read $manifest: $!\n";
while (my $line = <$mh>) {
    next unless $line =~ /\S/;
    my $row = $json->decode($line);
    next if $row->{no_result};
    my $split = $split{$row->{family} // ''} // 'dev';
    my $file = "$dir/$row->{file}";
    $cache{$file} //= Sisimai->make($file, delivered => 1, vacation => 1) || [];
    my ($got) = grep { lc $_->recipient->address eq lc $row->{recipient} } @{$cache{$file}};
    $n{$split}{rows}++;
    next unless $got;
    $n{$split}{recipient}++;
    # Sisimai 4 says softbounce: 1 soft, 0 hard, -1 neither.
    my $hard = $got->can('hardbounce') ? ($got->hardbounce ? 1 : 0) : ($got->softbounce == 0 ? 1 : 0);
    my $want_hard = ($row->{hardbounce} && $row->{hardbounce} ne 'false') ? 1 : 0;
    $n{$split}{replycode}++ if ($got->replycode // '') eq ($row->{replycode} // '');
    $n{$split}{status}++ if ($got->deliverystatus // '') eq ($row->{status} // '');
    $n{$split}{reason}++ if ($got->reason // '') eq ($row->{reason} // '');
    $n{$split}{hard}++ if $hard == $want_hard;
}
for my $split (sort keys %n) {
    my $rows = $n{$split}{rows};
    printf "%-8s %d rows:", $split, $rows;
    for my $m (qw(recipient replycode status reason hard)) {
        my $k = $n{$split}{$m} // 0;
        printf " %s %d (%.2f %%)", $m, $k, 100 * $k / $rows;
    }
    print "\n";
}
