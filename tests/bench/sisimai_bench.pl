#!/usr/bin/perl
# Messages per second of Sisimai (the reference bounce parser) over the
# bounce corpus, single thread, messages read into memory first so that only
# parsing is timed. Usage: perl tests/bench/sisimai_bench.pl DIR [SECONDS]
use strict;
use warnings;
use File::Find;
use Time::HiRes qw(time);
use Sisimai;

my $dir = shift or die "usage: $0 DIR [SECONDS]\n";
my $secs = shift // 10;
my @files;
find(sub { push @files, $File::Find::name if /\.eml\z/ }, $dir);
@files = sort @files;
my @mails;
for my $f (@files) {
    open(my $fh, '<', $f) or die "cannot read $f: $!\n";
    local $/;
    my $text = <$fh>;
    close $fh;
    push @mails, $text if length $text;
}
my $found = 0;
for my $m (@mails) { my $r = Sisimai->make(\$m) || []; $found += scalar @$r; }
my ($n, $start) = (0, time);
while (time - $start < $secs) {
    for my $m (@mails) { Sisimai->make(\$m); }
    $n += scalar @mails;
}
my $took = time - $start;
printf "Sisimai %s: %d files, %d results per pass; %d parsed in %.2f s = %.0f files/s\n",
    $Sisimai::VERSION, scalar @mails, $found, $n, $took, $n / $took;
