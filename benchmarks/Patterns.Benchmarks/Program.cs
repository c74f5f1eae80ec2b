using BenchmarkDotNet.Running;

namespace Patterns.Benchmarks;

public static class Program
{
    public static async Task<int> Main(string[] args)
    {
        if (args is ["outbox-profile", ..])
        {
            return await OutboxProfile.RunAsync(args);
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }
}
