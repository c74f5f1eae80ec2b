using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;

namespace Patterns.Benchmarks.Orchestration;

/// <summary>One workflow with one activity, one at a time: start to result.</summary>
[Config(typeof(Config))]
public class WorkflowLatencyBenchmarks
{
    private PatternsEngine? _patterns;
    private WorkflowCoreEngine? _workflowCore;
    private int _next;

    [GlobalSetup(Targets = [nameof(Patterns_InMemory)])]
    public void SetupInMemory() => _patterns = PatternsEngine.StartAsync(Store.InMemory).GetAwaiter().GetResult();

    [GlobalSetup(Targets = [nameof(Patterns_Sqlite)])]
    public void SetupSqlite() => _patterns = PatternsEngine.StartAsync(Store.Sqlite).GetAwaiter().GetResult();

    [GlobalSetup(Targets = [nameof(Patterns_Postgres)])]
    public void SetupPostgres() => _patterns = PatternsEngine.StartAsync(Store.Postgres).GetAwaiter().GetResult();

    [GlobalSetup(Targets = [nameof(WorkflowCore)])]
    public void SetupWorkflowCore() => _workflowCore = new WorkflowCoreEngine();

    [GlobalCleanup]
    public void Cleanup()
    {
        _patterns?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _workflowCore?.Dispose();
    }

    [Benchmark(Baseline = true)]
    public Task WorkflowCore() => _workflowCore!.RunAsync("one-noop", 1);

    [Benchmark]
    public Task<int> Patterns_InMemory() => RunAsync();

    [Benchmark]
    public Task<int> Patterns_Sqlite() => RunAsync();

    [Benchmark]
    public Task<int> Patterns_Postgres() => RunAsync();

    private async Task<int> RunAsync()
    {
        var id = "lat-" + Interlocked.Increment(ref _next);
        await _patterns!.Client.StartAsync(nameof(NoOpChain), id, 1);
        return await _patterns.Client.GetResultAsync<int>(id);
    }

    private sealed class Config : ManualConfig
    {
        public Config()
        {
            AddColumn(StatisticColumn.P50, StatisticColumn.P95, StatisticColumn.Max);
            SummaryStyle = SummaryStyle.Default.WithRatioStyle(RatioStyle.Trend);
        }
    }
}
