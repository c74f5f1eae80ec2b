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
    private DurableTaskEngine? _durableTask;
    private WolverineSagaEngine? _wolverine;
    private int _next;

    [GlobalSetup(Targets = [nameof(Patterns_InMemory)])]
    public void SetupInMemory() => _patterns = PatternsEngine.StartAsync(Store.InMemory).GetAwaiter().GetResult();

    [GlobalSetup(Targets = [nameof(Patterns_Sqlite)])]
    public void SetupSqlite() => _patterns = PatternsEngine.StartAsync(Store.Sqlite).GetAwaiter().GetResult();

    [GlobalSetup(Targets = [nameof(Patterns_Postgres)])]
    public void SetupPostgres() => _patterns = PatternsEngine.StartAsync(Store.Postgres).GetAwaiter().GetResult();

    [GlobalSetup(Targets = [nameof(WorkflowCore)])]
    public void SetupWorkflowCore() => _workflowCore = new WorkflowCoreEngine();

    [GlobalSetup(Targets = [nameof(DurableTask)])]
    public void SetupDurableTask() => _durableTask = DurableTaskEngine.StartAsync().GetAwaiter().GetResult();

    [GlobalSetup(Targets = [nameof(Wolverine_Sqlite)])]
    public void SetupWolverineSqlite() => _wolverine = WolverineSagaEngine.StartAsync(Store.Sqlite).GetAwaiter().GetResult();

    [GlobalSetup(Targets = [nameof(Wolverine_Postgres)])]
    public void SetupWolverinePostgres() => _wolverine = WolverineSagaEngine.StartAsync(Store.Postgres).GetAwaiter().GetResult();

    [GlobalCleanup]
    public void Cleanup()
    {
        _durableTask?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _wolverine?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _patterns?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _workflowCore?.Dispose();
    }

    [Benchmark(Baseline = true)]
    public Task WorkflowCore() => _workflowCore!.RunAsync("one-noop", 1);

    [Benchmark]
    public Task DurableTask() => _durableTask!.RunAsync(1, 1);

    [Benchmark]
    public Task<int> Patterns_InMemory() => RunAsync();

    [Benchmark]
    public Task<int> Patterns_Sqlite() => RunAsync();

    [Benchmark]
    public Task<int> Patterns_Postgres() => RunAsync();

    [Benchmark]
    public Task Wolverine_Sqlite() => _wolverine!.RunAsync(1, steps: 1);

    [Benchmark]
    public Task Wolverine_Postgres() => _wolverine!.RunAsync(1, steps: 1);

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
