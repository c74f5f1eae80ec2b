using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Reports;

namespace Patterns.Benchmarks.Orchestration;

/// <summary>
/// 10,000 instances of a workflow with 5 sequential no-op activities, started at once; one operation is the whole batch,
/// from the first start to the last completion (workflows per second = 10,000 / mean).
/// </summary>
[Config(typeof(Config))]
public class WorkflowThroughputBenchmarks
{
    private PatternsEngine? _patterns;
    private WorkflowCoreEngine? _workflowCore;
    private DurableTaskEngine? _durableTask;
    private WolverineSagaEngine? _wolverine;

    [Params(10_000)]
    public int Workflows { get; set; }

    [IterationSetup(Targets = [nameof(Patterns_InMemory)])]
    public void SetupInMemory() => _patterns = PatternsEngine.StartAsync(Store.InMemory).GetAwaiter().GetResult();

    [IterationSetup(Targets = [nameof(Patterns_Sqlite)])]
    public void SetupSqlite() => _patterns = PatternsEngine.StartAsync(Store.Sqlite).GetAwaiter().GetResult();

    [IterationSetup(Targets = [nameof(Patterns_Postgres)])]
    public void SetupPostgres() => _patterns = PatternsEngine.StartAsync(Store.Postgres).GetAwaiter().GetResult();

    [IterationSetup(Targets = [nameof(WorkflowCore)])]
    public void SetupWorkflowCore() => _workflowCore = new WorkflowCoreEngine();

    [IterationSetup(Targets = [nameof(DurableTask)])]
    public void SetupDurableTask() => _durableTask = DurableTaskEngine.StartAsync().GetAwaiter().GetResult();

    [IterationSetup(Targets = [nameof(Wolverine_Sqlite)])]
    public void SetupWolverineSqlite() => _wolverine = WolverineSagaEngine.StartAsync(Store.Sqlite).GetAwaiter().GetResult();

    [IterationSetup(Targets = [nameof(Wolverine_Postgres)])]
    public void SetupWolverinePostgres() => _wolverine = WolverineSagaEngine.StartAsync(Store.Postgres).GetAwaiter().GetResult();

    [IterationCleanup]
    public void Cleanup()
    {
        _durableTask?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _durableTask = null;
        _wolverine?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _wolverine = null;
        _patterns?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _patterns = null;
        _workflowCore?.Dispose();
        _workflowCore = null;
    }

    [Benchmark(Baseline = true)]
    public Task WorkflowCore() => _workflowCore!.RunAsync("five-noops", Workflows);

    [Benchmark]
    public Task DurableTask() => _durableTask!.RunAsync(Workflows, 5);

    [Benchmark]
    public Task Patterns_InMemory() => RunPatternsAsync();

    [Benchmark]
    public Task Patterns_Sqlite() => RunPatternsAsync();

    [Benchmark]
    public Task Patterns_Postgres() => RunPatternsAsync();

    [Benchmark]
    public Task Wolverine_Sqlite() => _wolverine!.RunAsync(Workflows);

    [Benchmark]
    public Task Wolverine_Postgres() => _wolverine!.RunAsync(Workflows);

    private Task RunPatternsAsync() => RunOnAsync(_patterns!);

    /// <summary>Runs one batch on <paramref name="engine"/>: every start at once, then every result.</summary>
    public async Task RunOnAsync(PatternsEngine engine)
    {
        var client = engine.Client;
        var ids = new string[Workflows];
        var starts = new Task[Workflows];
        for (var i = 0; i < Workflows; i++)
        {
            ids[i] = "wf-" + i;
            starts[i] = client.StartAsync(nameof(NoOpChain), ids[i], 5);
        }

        await Task.WhenAll(starts);
        var results = new Task<int>[Workflows];
        for (var i = 0; i < Workflows; i++)
        {
            results[i] = client.GetResultAsync<int>(ids[i]);
        }

        await Task.WhenAll(results);
    }

    private sealed class Config : ManualConfig
    {
        public Config()
        {
            AddDiagnoser(MemoryDiagnoser.Default);
            AddColumn(new WorkflowsPerSecondColumn());
            SummaryStyle = SummaryStyle.Default.WithRatioStyle(RatioStyle.Trend);
        }
    }
}

/// <summary>Workflows per second: the batch size divided by the mean time of one batch.</summary>
public sealed class WorkflowsPerSecondColumn : IColumn
{
    public string Id => nameof(WorkflowsPerSecondColumn);

    public string ColumnName => "Workflows/s";

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Custom;

    public int PriorityInCategory => 0;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => "Workflows completed per second (batch size / mean)";

    public string GetValue(Summary summary, BenchmarkDotNet.Running.BenchmarkCase benchmarkCase)
    {
        var report = summary[benchmarkCase];
        if (report?.ResultStatistics is not { } stats)
        {
            return "-";
        }

        var workflows = (int)benchmarkCase.Parameters["Workflows"];
        return (workflows / (stats.Mean / 1e9)).ToString("N0", System.Globalization.CultureInfo.InvariantCulture);
    }

    public string GetValue(Summary summary, BenchmarkDotNet.Running.BenchmarkCase benchmarkCase, SummaryStyle style) => GetValue(summary, benchmarkCase);

    public bool IsDefault(Summary summary, BenchmarkDotNet.Running.BenchmarkCase benchmarkCase) => false;

    public bool IsAvailable(Summary summary) => true;
}
