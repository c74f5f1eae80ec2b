using System.Text.Json.Serialization;
using Patterns.EventSourcing;
using Patterns.Messaging;

namespace EventSourcingSample;

/// <summary>
/// Every type the store serializes (events, the snapshotted aggregate state, the read models), with its JSON code
/// generated at compile time, so the sample also runs as a NativeAOT executable, where JSON has no reflection. A type
/// missing here fails the host's start with an error that names it.
/// </summary>
[JsonSerializable(typeof(AccountOpened))]
[JsonSerializable(typeof(MoneyDeposited))]
[JsonSerializable(typeof(MoneyWithdrawn))]
[JsonSerializable(typeof(BankAccount))]
[JsonSerializable(typeof(AccountSummary))]
[JsonSerializable(typeof(DailyTotals))]
internal sealed partial class BankJson : JsonSerializerContext;

// Events are stored under these names, not under their CLR names, so the types can be renamed or moved freely.
[MessageName("bank.account-opened")]
public sealed record AccountOpened(string Owner);

[MessageName("bank.money-deposited")]
public sealed record MoneyDeposited(decimal Amount, string Reference);

[MessageName("bank.money-withdrawn")]
public sealed record MoneyWithdrawn(decimal Amount, string Reference);

/// <summary>The aggregate: its state is rebuilt from its events; its methods decide which new events a command produces.</summary>
public sealed class BankAccount : IAggregate
{
    public string? Owner { get; set; }

    public decimal Balance { get; set; }

    public void Apply(object @event)
    {
        switch (@event)
        {
            case AccountOpened opened:
                Owner = opened.Owner;
                break;
            case MoneyDeposited deposited:
                Balance += deposited.Amount;
                break;
            case MoneyWithdrawn withdrawn:
                Balance -= withdrawn.Amount;
                break;
        }
    }

    public IEnumerable<object> Open(string owner) =>
        Owner is null ? [new AccountOpened(owner)] : []; // opening twice is a no-op, so the sample can run again on a durable store

    public IEnumerable<object> Deposit(decimal amount, string reference)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(amount);
        return Owner is null ? throw new InvalidOperationException("The account is not open.") : [new MoneyDeposited(amount, reference)];
    }

    public IEnumerable<object> Withdraw(decimal amount, string reference)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(amount);
        if (amount > Balance)
        {
            throw new InvalidOperationException($"Insufficient funds: the balance is {Balance:0.00}, the withdrawal {amount:0.00}.");
        }

        return [new MoneyWithdrawn(amount, reference)];
    }
}

/// <summary>A read model kept by an inline projection: up to date as soon as an append returns.</summary>
public sealed record AccountSummary(string AccountId, string Owner, decimal Balance, int Transactions)
{
    public static AccountSummary? Apply(AccountSummary? current, RecordedEvent e) => e.Data switch
    {
        AccountOpened opened => new AccountSummary(e.StreamId, opened.Owner, 0m, 0),
        MoneyDeposited deposited => current! with { Balance = current.Balance + deposited.Amount, Transactions = current.Transactions + 1 },
        MoneyWithdrawn withdrawn => current! with { Balance = current.Balance - withdrawn.Amount, Transactions = current.Transactions + 1 },
        _ => current,
    };
}

/// <summary>A read model kept by an async projection: totals per day, from a subscription with a checkpoint.</summary>
public sealed record DailyTotals(string Day, decimal Deposited, decimal Withdrawn);

public sealed class DailyTotalsProjection : IProjection
{
    public const string Collection = "daily-totals";

    public async ValueTask ProjectAsync(RecordedEvent @event, ProjectionContext context, CancellationToken cancellationToken)
    {
        var day = @event.Timestamp.UtcDateTime.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
        var totals = context.Collection<DailyTotals>(Collection);
        await totals.UpdateAsync(day, current =>
        {
            current ??= new DailyTotals(day, 0m, 0m);
            return @event.Data switch
            {
                MoneyDeposited d => current with { Deposited = current.Deposited + d.Amount },
                MoneyWithdrawn w => current with { Withdrawn = current.Withdrawn + w.Amount },
                _ => current,
            };
        }, cancellationToken);
    }
}
