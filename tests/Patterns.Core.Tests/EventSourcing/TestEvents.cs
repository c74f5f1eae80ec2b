using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.Testing;

namespace Patterns.Core.Tests.EventSourcing;

[MessageName("bank.opened")]
public sealed record AccountOpened(string Owner);

[MessageName("bank.deposited")]
public sealed record Deposited(decimal Amount);

[MessageName("bank.withdrawn")]
public sealed record Withdrawn(decimal Amount);

[MessageName("bank.closed")]
public sealed record AccountClosed(string Reason);

public interface IOrderEvent;

[MessageName("orders.placed")]
public sealed record OrderPlacedEvent(string OrderId, decimal Total) : IOrderEvent;

[MessageName("orders.shipped")]
public sealed record OrderShippedEvent(string OrderId) : IOrderEvent;

/// <summary>A mutable aggregate: the state a bank account rebuilds from its events.</summary>
public sealed class BankAccount : IAggregate
{
    public string? Owner { get; set; }

    public decimal Balance { get; set; }

    public bool IsOpen { get; set; }

    public int Applied { get; set; }

    public void Apply(object @event)
    {
        Applied++;
        switch (@event)
        {
            case AccountOpened opened:
                Owner = opened.Owner;
                IsOpen = true;
                break;
            case Deposited deposited:
                Balance += deposited.Amount;
                break;
            case Withdrawn withdrawn:
                Balance -= withdrawn.Amount;
                break;
            case AccountClosed:
                IsOpen = false;
                break;
        }
    }

    public IEnumerable<object> Withdraw(decimal amount)
    {
        if (!IsOpen)
        {
            throw new InvalidOperationException("The account is not open.");
        }

        if (amount > Balance)
        {
            throw new InvalidOperationException($"Insufficient funds: balance {Balance}, withdrawal {amount}.");
        }

        yield return new Withdrawn(amount);
    }
}

/// <summary>An immutable state folded from events.</summary>
public sealed record Tally(int Count, decimal Total)
{
    public static Tally Empty { get; } = new(0, 0);

    public Tally Apply(object @event) => @event switch
    {
        Deposited d => this with { Count = Count + 1, Total = Total + d.Amount },
        Withdrawn w => this with { Count = Count + 1, Total = Total - w.Amount },
        _ => this with { Count = Count + 1 },
    };
}

public sealed record BalanceView(string AccountId, decimal Balance, int Events);

internal static class EventSourcingHost
{
    public static readonly TimeSpan Wait = TestHost.Wait;

    public static Task<IHost> StartAsync(Action<EventSourcingBuilder> configure, TimeProvider? time = null) =>
        TestHost.StartAsync(
            b =>
            {
                b.AddEventSourcing(es =>
                {
                    es.AddEvent<AccountOpened>().AddEvent<Deposited>().AddEvent<Withdrawn>().AddEvent<AccountClosed>();
                    configure(es);
                });

                // The inbox pruner's hourly timer would count among the timers these tests wait for (InboxPrunerTests cover it).
                b.Services.Configure<PatternsOptions>(o => o.InboxRetention = Timeout.InfiniteTimeSpan);
            },
            time ?? new FakeTimeProvider(),
            harness: false);

    public static IEventStore Store(this IHost host) => host.Services.GetRequiredService<IEventStore>();

    public static IEventSubscriptions Subscriptions(this IHost host) => host.Services.GetRequiredService<IEventSubscriptions>();

    public static async Task<List<T>> CollectAsync<T>(this IAsyncEnumerable<T> source)
    {
        var list = new List<T>();
        await foreach (var item in source)
        {
            list.Add(item);
        }

        return list;
    }
}
