using Microsoft.Extensions.DependencyInjection;
using Patterns.Messaging;
using Patterns.PubSub;

namespace Patterns.Orchestration.Tests;

public sealed record Deposit(string AccountId, int Amount);

public sealed record Shipped(string OrderId);

/// <summary>Four steps with compensations; the step named in the input fails.</summary>
public sealed class CompensatingWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string failAt)
    {
        var saga = new CompensationScope();
        try
        {
            foreach (var step in new[] { "A", "B", "C", "D" })
            {
                await context.CallActivityAsync(step == failAt ? "AlwaysFails" : "Record", "do-" + step, new ActivityOptions { Retry = RetryPolicy.None });
                saga.Add(() => context.CallActivityAsync("Record", "undo-" + step));
            }

            return "completed";
        }
        catch (ActivityFailureException)
        {
            await saga.CompensateAsync();
            return "compensated";
        }
    }
}

/// <summary>Sums correlated deposits until it has seen the expected number.</summary>
public sealed class AccountWorkflow : Workflow<int, int>
{
    public override async Task<int> RunAsync(WorkflowContext context, int expected)
    {
        var sum = 0;
        for (var i = 0; i < expected; i++)
        {
            sum += (await context.WaitForMessageAsync<Deposit>()).Amount;
        }

        return sum;
    }
}

/// <summary>Waits for a shipment confirmation with a durable timeout, compensating when it does not come.</summary>
public sealed class ShippingWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string orderId)
    {
        var saga = new CompensationScope();
        await context.CallActivityAsync("Record", "charge-" + orderId);
        saga.Add(() => context.CallActivityAsync("Record", "refund-" + orderId));
        try
        {
            var shipped = await context.WaitForMessageAsync<Shipped>(TimeSpan.FromHours(1));
            return "shipped " + shipped.OrderId;
        }
        catch (TimeoutException)
        {
            await saga.CompensateAsync();
            return "timed out";
        }
    }
}

public sealed class SagaTests
{
    private static void Register(OrchestrationBuilder o) => o
        .AddWorkflow<CompensatingWorkflow>()
        .AddWorkflow<AccountWorkflow>()
        .AddWorkflow<ShippingWorkflow>()
        .AddActivities<TestActivities>()
        .CorrelateMessage<Deposit>("deposits", d => d.AccountId)
        .CorrelateMessage<Shipped>("shipments", s => "ship-" + s.OrderId);

    [Theory]
    [InlineData("B", new[] { "do-A", "undo-A" })]
    [InlineData("D", new[] { "do-A", "do-B", "do-C", "undo-C", "undo-B", "undo-A" })]
    [InlineData("none", new[] { "do-A", "do-B", "do-C", "do-D" })]
    public async Task Compensation_AfterAFailure_RunsInReverseOrder(string failAt, string[] expected)
    {
        await using var host = await TestHost.StartAsync(Register);

        await host.Client.StartAsync(nameof(CompensatingWorkflow), "saga", failAt);
        var result = await host.ResultAsync<string>("saga");

        result.Should().Be(failAt == "none" ? "completed" : "compensated");
        host.Log.Calls.Where(c => c.StartsWith("do-", StringComparison.Ordinal) || c.StartsWith("undo-", StringComparison.Ordinal)).Should().Equal(expected);
    }

    [Fact]
    public async Task CorrelatedMessages_ArrivingConcurrently_AreAllAppliedWithNoLostUpdate()
    {
        await using var host = await TestHost.StartAsync(Register);
        var publisher = host.Host.Services.GetRequiredService<IPublisher>();
        const int count = 200;
        await host.Client.StartAsync(nameof(AccountWorkflow), "acct-1", count);

        await Task.WhenAll(Enumerable.Range(1, count).Select(i => Task.Run(async () => await publisher.PublishAsync("deposits", new Deposit("acct-1", i)))));

        (await host.ResultAsync<int>("acct-1")).Should().Be(count * (count + 1) / 2);
        var history = await host.Client.GetHistoryAsync("acct-1");
        history.Events.Count(e => e.Kind == History.HistoryEventKind.SignalReceived).Should().Be(count);
    }

    [Fact]
    public async Task CorrelatedMessage_DeliveredTwice_IsAppliedOnce()
    {
        await using var host = await TestHost.StartAsync(Register);
        var publisher = host.Host.Services.GetRequiredService<IPublisher>();
        await host.Client.StartAsync(nameof(AccountWorkflow), "acct-2", 2);
        var id = Guid.NewGuid();

        await publisher.PublishAsync("deposits", new Deposit("acct-2", 5), new MessageOptions { MessageId = id });
        await host.WaitForAsync("acct-2", History.HistoryEventKind.SignalReceived);
        await publisher.PublishAsync("deposits", new Deposit("acct-2", 5), new MessageOptions { MessageId = id });
        await publisher.PublishAsync("deposits", new Deposit("acct-2", 7));

        (await host.ResultAsync<int>("acct-2")).Should().Be(12);
    }

    [Fact]
    public async Task MessageWait_WithDurableTimeout_CompensatesWhenNoMessageComes()
    {
        await using var host = await TestHost.StartAsync(Register);
        var publisher = host.Host.Services.GetRequiredService<IPublisher>();

        await host.Client.StartAsync(nameof(ShippingWorkflow), "ship-1", "1");
        await host.Client.StartAsync(nameof(ShippingWorkflow), "ship-2", "2");
        await host.WaitForAsync("ship-1", History.HistoryEventKind.TimerStarted);
        await host.WaitForAsync("ship-2", History.HistoryEventKind.TimerStarted);
        await publisher.PublishAsync("shipments", new Shipped("2"));
        (await host.ResultAsync<string>("ship-2")).Should().Be("shipped 2");
        host.Time.Advance(TimeSpan.FromHours(1));

        (await host.ResultAsync<string>("ship-1")).Should().Be("timed out");
        host.Log.Calls.Where(c => c.StartsWith("charge-", StringComparison.Ordinal) || c.StartsWith("refund-", StringComparison.Ordinal))
            .Should().BeEquivalentTo("charge-1", "charge-2", "refund-1");
    }
}
