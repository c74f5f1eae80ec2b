using BenchmarkDotNet.Running;

namespace Patterns.Benchmarks.PeerLinks;

public static class Program
{
    public static void Main(string[] args) =>
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
