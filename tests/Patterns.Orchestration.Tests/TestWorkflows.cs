namespace Patterns.Orchestration.Tests;

public sealed record OrderInput(string OrderId, decimal Amount);

/// <summary>Activities that record each call in the <see cref="CallLog"/>.</summary>
public sealed class TestActivities(CallLog log)
{
    public Task<string> Echo(string input)
    {
        log.Add("Echo:" + input);
        return Task.FromResult("echo-" + input);
    }

    public Task<int> Double(int value)
    {
        log.Add("Double:" + value);
        return Task.FromResult(value * 2);
    }

    public Task<string> Flaky(string input, ActivityContext context)
    {
        log.Add($"Flaky:{input}:{context.Attempt}");
        if (context.Attempt < 3)
        {
            throw new InvalidOperationException($"attempt {context.Attempt} failed");
        }

        return Task.FromResult("ok-" + input);
    }

    public Task<string> AlwaysFails(string input)
    {
        log.Add("AlwaysFails:" + input);
        throw new ArgumentException("card declined: " + input);
    }

    public async Task<string> Slow(string input, ActivityContext context)
    {
        log.Add($"Slow:{input}:{context.Attempt}");
        if (context.Attempt == 1)
        {
            await Task.Delay(Timeout.Infinite, context.CancellationToken);
        }

        return "slow-" + input;
    }

    public async Task<string> Beating(string input, ActivityContext context)
    {
        log.Add($"Beating:{input}:{context.Attempt}");
        if (context.Attempt == 1)
        {
            await Task.Delay(Timeout.Infinite, context.CancellationToken); // never heartbeats
        }

        context.Heartbeat();
        return "beat-" + input;
    }

    /// <summary>Runs until its token fires, then logs that it did.</summary>
    public async Task<string> Blocking(string input, ActivityContext context)
    {
        log.Add("Blocking:" + input);
        try
        {
            await Task.Delay(Timeout.Infinite, context.CancellationToken);
        }
        catch (OperationCanceledException)
        {
            log.Add("Blocking-canceled:" + input);
            throw;
        }

        return "never";
    }

    /// <summary>Fails its first attempt; blocks the first time it reaches any later attempt (the host is stopped then), then succeeds.</summary>
    public async Task<string> Sticky(string input, ActivityContext context)
    {
        var call = $"Sticky:{input}:{context.Attempt}";
        log.Add(call);
        if (context.Attempt == 1)
        {
            throw new InvalidOperationException("the first attempt fails");
        }

        if (log.Count(call) == 1)
        {
            await Task.Delay(Timeout.Infinite, context.CancellationToken);
        }

        return $"sticky-{input}-{context.Attempt}";
    }

    public Task Record(string entry)
    {
        log.Add(entry);
        return Task.CompletedTask;
    }
}

public sealed class SequenceWorkflow(CallLog log) : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string input)
    {
        if (!context.IsReplaying)
        {
            log.Add("run");
        }

        var a = await context.CallActivityAsync<string>("Echo", input + "-1");
        var b = await context.CallActivityAsync<string>("Echo", input + "-2");
        var c = await context.CallActivityAsync<string>("Echo", input + "-3");
        return string.Join(",", a, b, c);
    }
}

public sealed class FanOutWorkflow : Workflow<int, int>
{
    public override async Task<int> RunAsync(WorkflowContext context, int input)
    {
        var tasks = Enumerable.Range(1, input).Select(i => context.CallActivityAsync<int>("Double", i)).ToList();
        var results = await Task.WhenAll(tasks);
        return results.Sum();
    }
}

public sealed class TimerWorkflow : Workflow<int, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, int minutes)
    {
        var start = context.UtcNow;
        await context.DelayAsync(TimeSpan.FromMinutes(minutes));
        var elapsed = context.UtcNow - start;
        await context.CallActivityAsync("Record", "timer-done");
        return $"{elapsed.TotalMinutes}";
    }
}

/// <summary>Adds signalled numbers until a target; answers a query and an update.</summary>
public sealed class CounterWorkflow : Workflow<int, int>
{
    private int _sum;

    public override async Task<int> RunAsync(WorkflowContext context, int target)
    {
        context.SetQueryHandler("sum", () => _sum);
        context.SetUpdateHandler<int, int>("set", value =>
        {
            _sum = value;
            return Task.FromResult(_sum);
        });
        while (_sum < target)
        {
            var add = await context.WaitForSignalAsync<int>("add");
            _sum += add;
            context.SetCustomStatus(new { sum = _sum });
        }

        return _sum;
    }
}

public sealed class RetryWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string input)
    {
        var options = new ActivityOptions { Retry = new RetryPolicy { MaxAttempts = 3, InitialInterval = TimeSpan.FromSeconds(10) } };
        return await context.CallActivityAsync<string>("Flaky", input, options);
    }
}

public sealed class FailingActivityWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string input)
    {
        try
        {
            await context.CallActivityAsync<string>("AlwaysFails", input, new ActivityOptions { Retry = RetryPolicy.None });
            return "unreachable";
        }
        catch (ActivityFailureException ex)
        {
            return $"{ex.Activity}|{ex.ErrorType}|{ex.ErrorMessage}";
        }
    }
}

public sealed class TimeoutWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string activity)
    {
        var options = new ActivityOptions
        {
            StartToCloseTimeout = TimeSpan.FromSeconds(30),
            HeartbeatTimeout = activity == "Beating" ? TimeSpan.FromSeconds(5) : null,
            Retry = new RetryPolicy { MaxAttempts = 2, InitialInterval = TimeSpan.FromSeconds(1) },
        };
        return await context.CallActivityAsync<string>(activity, "x", options);
    }
}

public sealed class LocalActivityWorkflow(CallLog log) : Workflow<int, int>
{
    public override async Task<int> RunAsync(WorkflowContext context, int input)
    {
        var local = await context.CallLocalActivityAsync("AddTen", _ =>
        {
            log.Add("local");
            return Task.FromResult(input + 10);
        });
        var doubled = await context.CallActivityAsync<int>("Double", local);
        return doubled;
    }
}

public sealed class ParentWorkflow : Workflow<int, int>
{
    public override async Task<int> RunAsync(WorkflowContext context, int input)
    {
        var first = context.CallChildWorkflowAsync<int>(nameof(FanOutWorkflow), input);
        var second = context.CallChildWorkflowAsync<int>(nameof(FanOutWorkflow), input + 1);
        var results = await Task.WhenAll(first, second);
        return results[0] + results[1];
    }
}

public sealed class ContinueWorkflow : Workflow<int, int>
{
    public override async Task<int> RunAsync(WorkflowContext context, int count)
    {
        await context.CallActivityAsync<int>("Double", count);
        if (count < 3)
        {
            context.ContinueAsNew(count + 1);
        }

        return count * 100 + context.Run;
    }
}

public sealed class CancellableWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string input)
    {
        try
        {
            await context.DelayAsync(TimeSpan.FromDays(1));
            return "slept";
        }
        catch (OperationCanceledException)
        {
            // Compensation still runs after cancellation, on a token of its own.
            await context.CallActivityAsync("Record", "cleanup-" + input, new ActivityOptions { CancellationToken = CancellationToken.None });
            throw;
        }
    }
}

public sealed class DeterministicValuesWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string input)
    {
        var before = $"{context.NewGuid()}|{context.Random.Next()}|{context.UtcNow:O}";
        await context.CallActivityAsync<string>("Echo", before);
        return before;
    }
}

public sealed class BlockingActivityWorkflow : Workflow<string, string>
{
    public override Task<string> RunAsync(WorkflowContext context, string input) => context.CallActivityAsync<string>("Blocking", input);
}

public sealed class StickyWorkflow : Workflow<string, string>
{
    public override Task<string> RunAsync(WorkflowContext context, string input) =>
        context.CallActivityAsync<string>("Sticky", input, new ActivityOptions { Retry = new RetryPolicy { MaxAttempts = 5, InitialInterval = TimeSpan.FromSeconds(10) } });
}
